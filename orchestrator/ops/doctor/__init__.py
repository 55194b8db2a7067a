"""``ripple doctor``: facts gathered over HTTP and from the data dir, pure rules, a rendered report."""
