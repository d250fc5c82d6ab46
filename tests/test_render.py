"""Rendering a run's messages: how many render processes, and what they hand back."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import listkit.send.render as render
from listkit.config import load_settings
from listkit.errors import ConfigError
from listkit.send.prepare import prepare
from listkit.workspace import Workspace
from tests.test_send import claimed, setup_campaign


def settings(tmp_path: Path, **environ: str):
    return load_settings(tmp_path, environ=environ)


def test_a_large_send_gets_one_render_process_per_core(tmp_path, monkeypatch):
    monkeypatch.setattr(render.os, "cpu_count", lambda: 4)
    assert render.render_processes(settings(tmp_path), 5000) == 4


def test_a_large_unsigned_send_leaves_the_sending_process_a_core_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(render.os, "cpu_count", lambda: 4)
    assert render.render_processes(settings(tmp_path), 5000, signed=False) == 3
    monkeypatch.setattr(render.os, "cpu_count", lambda: 2)
    assert render.render_processes(settings(tmp_path), 5000, signed=False) == 1
    assert render.render_processes(settings(tmp_path), 5000, signed=True) == 2


def test_a_single_core_machine_renders_in_the_sending_process(tmp_path, monkeypatch):
    monkeypatch.setattr(render.os, "cpu_count", lambda: 1)
    assert render.render_processes(settings(tmp_path), 5000) == 0


def test_a_small_send_renders_in_the_sending_process_whatever_the_setting(tmp_path):
    small = render.POOL_THRESHOLD - 1
    assert render.render_processes(settings(tmp_path), small) == 0
    assert render.render_processes(settings(tmp_path, LISTKIT_RENDER_WORKERS="3"), small) == 0


def test_listkit_render_workers_forces_the_number_of_render_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(render.os, "cpu_count", lambda: 8)
    assert render.render_processes(settings(tmp_path, LISTKIT_RENDER_WORKERS="1"), 5000) == 1
    monkeypatch.setattr(render.os, "cpu_count", lambda: 1)
    assert render.render_processes(settings(tmp_path, LISTKIT_RENDER_WORKERS=" 2 "), 5000) == 2


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_render_worker_count_that_is_not_a_whole_number_is_refused_by_name(tmp_path, value):
    with pytest.raises(ConfigError) as e:
        render.render_processes(settings(tmp_path, LISTKIT_RENDER_WORKERS=value), 5000)
    assert str(e.value) == (
        f"LISTKIT_RENDER_WORKERS must be a whole number of processes (1 or more), not {value!r}"
    )


def test_render_processes_hand_back_each_batch_in_the_order_it_was_submitted(run, workspace):
    addresses = [f"b{i:02d}@example.com" for i in range(14)]
    setup_campaign(run, workspace, 25, addresses)
    ws = Workspace(workspace)
    try:
        p, _, rows = claimed(ws, "1-test", 100)
    finally:
        ws.close()
    batches = [rows[i : i + 3] for i in range(0, len(rows), 3)]

    async def rendered_by_two_processes():
        renderer = render.Renderer(p.composer, 2)
        try:
            await renderer.started()
            return await asyncio.gather(*(renderer.submit(batch) for batch in batches))
        finally:
            renderer.close()

    results = asyncio.run(rendered_by_two_processes())
    assert [len(r) for r in results] == [len(b) for b in batches]
    for batch, built in zip(batches, results, strict=True):
        for row, (data, error) in zip(batch, built, strict=True):
            assert error is None
            assert f"\r\nTo: <{row.email}>\r\n".encode() in data
            assert data.endswith(b"\r\n.\r\n")


def test_render_processes_run_at_a_lower_priority_than_the_sending_process(run, workspace):
    setup_campaign(run, workspace, 25, ["n@example.com"])
    ws = Workspace(workspace)
    try:
        p = prepare(ws, "t")
    finally:
        ws.close()

    async def niceness_of_a_render_process():
        renderer = render.Renderer(p.composer, 1)
        try:
            await renderer.started()
            return renderer.pool.submit(os.nice, 0).result()
        finally:
            renderer.close()

    ours = os.nice(0)
    assert asyncio.run(niceness_of_a_render_process()) == min(ours + render.RENDER_NICENESS, 19)
