"""What readers bought and what earned it: sales, attribution, money, reports."""
