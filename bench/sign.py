"""Benchmark: DKIM signatures per second, listkit's signer against dkimpy's.

In the same run, for the same N composed messages of the example offer and
the same 2048-bit key (relaxed/relaxed, rsa-sha256, the same header names):

- baseline: ``dkim.sign`` of dkimpy (pure-Python canonicalization and RSA);
- listkit: ``dkim.Signer.sign`` (our canonicalization, RSA through
  ``cryptography``/OpenSSL);
- for scale: ``Composer.compose`` unsigned, the rest of the per-message work.

Then the CPU time (``time.process_time``, which other load on the machine
hardly moves) a render process spends on a message: ``compose_rows`` over
claimed rows, unsigned and DKIM-signed, and the RSA-2048 step alone; what
signing costs besides RSA is their difference.

Every listkit signature is checked with dkimpy's verifier before timing.

    .venv/bin/python bench/sign.py [--messages 500]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import dkim as dkimpy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from listkit.config import load_settings
from listkit.mail import dkim
from listkit.mail.compose import Composer
from listkit.mail.offers import load_offer
from listkit.mail.tracking import new_token
from listkit.send.outbox import Claimed
from listkit.send.render import compose_rows
from listkit.workspace import init_workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="listkit-bench-dkim-") as tmp:
        root = Path(tmp) / "ws"
        init_workspace(root)
        new = dkim.keygen(root, domain="example.com", selector="bench")
        settings = load_settings(root, environ={})
        offer = load_offer(root / "offers", "launch")
        composer = Composer(offer, settings, campaign="launch", offers_dir=root / "offers")
        start = time.perf_counter()
        messages = [
            composer.compose(
                subscriber={"id": i, "email": f"r{i}@example.org", "name": f"R {i}", "fields": {}},
                list_slug="blog",
                list_title="Blog",
                token=new_token(),
            ).data
            for i in range(args.messages)
        ]
        compose_s = time.perf_counter() - start
        signer = dkim.signer_for(
            load_settings(
                root,
                environ={"LISTKIT_DKIM_KEY": str(new.path), "LISTKIT_DKIM_SELECTOR": "bench"},
            ),
            "you@example.com",
        )
        dns = {f"{new.record_name}.".encode(): new.record_value.encode()}
        for message in messages[:20]:
            assert dkimpy.verify(signer.sign(message), dnsfunc=lambda n, timeout=5: dns.get(n))
        header = signer.sign(messages[0]).split(b"\r\n\r\n")[0].split(b"DKIM-Signature:")[1]
        names = re.sub(rb"\s", b"", dkimpy.util.parse_tag_value(header)[b"h"]).split(b":")
        pem = new.path.read_bytes()

        start = time.perf_counter()
        for message in messages:
            signer.sign(message)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        for message in messages:
            dkimpy.sign(message, b"bench", b"example.com", pem, include_headers=names)
        theirs_s = time.perf_counter() - start
        render_ms = render_process_cpu(composer, signer, args.messages)
    n = args.messages
    print(f"{n:,} messages of about {len(messages[0]):,} bytes, RSA 2048, relaxed/relaxed")
    print(f"{'':32}{'ms/msg':>9}{'msgs/s':>10}")
    for label, seconds in (
        ("dkimpy dkim.sign (baseline)", theirs_s),
        ("listkit Signer.sign", ours_s),
        ("listkit compose, unsigned", compose_s),
    ):
        print(f"{label:32}{seconds / n * 1e3:9.3f}{n / seconds:10,.0f}")
    print(f"ratio listkit / dkimpy: {theirs_s / ours_s:.1f}x faster")
    print(f"render process, CPU ms a message (compose_rows of {n:,} claimed rows, best of 3):")
    unsigned, signed, rsa = render_ms
    for label, ms in (
        ("unsigned", unsigned),
        ("DKIM-signed", signed),
        ("of which the RSA-2048 step", rsa),
        ("of which the rest of signing", signed - unsigned - rsa),
    ):
        print(f"  {label:30}{ms:9.3f}")


def render_process_cpu(composer: Composer, signer: dkim.Signer, n: int) -> tuple[float, ...]:
    """CPU ms a message of ``compose_rows`` unsigned, signed, and of the RSA step alone."""
    rows = [
        Claimed(
            i,
            i,
            f"r{i}@example.org",
            f"r{i}@example.org",
            f"R {i}",
            None,
            None,
            "{}",
            "blog",
            "Blog",
            None,  # the token is derived from the id, in the render process
            0,
            composer.secret,
        )
        for i in range(n)
    ]
    data = composer.compose(
        subscriber={"id": 1, "email": "r@example.org", "name": "R", "fields": {}},
        list_slug="blog",
        list_title="Blog",
        token=new_token(),
    ).data
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()  # rsa-sha256, as the signer
    head = data.partition(b"\r\n\r\n")[0]  # about what RSA signs: the canonical headers

    def unsigned() -> None:
        composer.signer = None
        compose_rows(composer, rows)

    def signed() -> None:
        composer.signer = signer
        compose_rows(composer, rows)

    def rsa() -> None:
        for _ in rows:
            signer.key.sign(head, pkcs1, sha256)

    best = {}
    for _round in range(3):
        for f in (unsigned, signed, rsa):
            start = time.process_time()
            f()
            ms = (time.process_time() - start) * 1e3 / n
            best[f] = min(best.get(f, ms), ms)
    return best[unsigned], best[signed], best[rsa]


if __name__ == "__main__":
    main()
