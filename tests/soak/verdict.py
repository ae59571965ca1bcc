"""The soak's pass/fail rules, on the samples and latency windows of one run.

  flat:   after warm-up, each series (RSS; all fds) is smoothed with a
          running median of 3 samples (one stray sample — a burst caught
          mid-flight — does not count), and max/min of the smoothed series
          must be <= 1 + TOLERANCE (5 %).  The descriptors that are not
          client connections (listeners, epoll/event fds, database and
          cache sockets, files) are a few dozen, where 5 % is less than one
          pooled connection: they may move by at most OTHER_FDS_SLACK.
  p99:    the median p99 of the last third of the post-warm-up windows is
          <= P99_RATIO x the median p99 of the first third, with P99_FLOOR
          as the smallest first-third value used (sub-10 ms p99s on a
          shared 2-core box double on noise alone).
"""

TOLERANCE = 0.05
OTHER_FDS_SLACK = 30
P99_RATIO = 2.0
P99_FLOOR = 0.020


def smooth(xs):
    """Running median of 3 (the ends keep their own value)."""
    if len(xs) < 3:
        return list(xs)
    return [xs[0]] + [sorted(xs[i - 1:i + 2])[1] for i in range(1, len(xs) - 1)] + [xs[-1]]


def flat(xs, tolerance=TOLERANCE):
    """(ok, max/min of the smoothed series)."""
    s = smooth(xs)
    if not s or min(s) <= 0:
        return False, float("inf")
    r = max(s) / min(s)
    return r <= 1 + tolerance, r


def within(xs, slack):
    """(ok, max-min of the smoothed series)."""
    s = smooth(xs)
    spread = max(s) - min(s) if s else 0
    return spread <= slack, spread


def percentile(sorted_xs, q):
    if not sorted_xs:
        return 0.0
    return sorted_xs[min(len(sorted_xs) - 1, int(len(sorted_xs) * q))]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0.0


def p99_stable(p99s):
    """(ok, first-third median, last-third median) over post-warm-up windows."""
    if len(p99s) < 3:
        return True, 0.0, 0.0
    k = max(1, len(p99s) // 3)
    first, last = median(p99s[:k]), median(p99s[-k:])
    return last <= P99_RATIO * max(first, P99_FLOOR), first, last
