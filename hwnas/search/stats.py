"""Small statistics for repeated trainings (pure Python, no scipy): the mean of a few seeds and its interval.

``mean_ci([0.90, 0.92, 0.94])`` gives the mean and the two-sided Student t interval of the mean,
``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation (n - 1 in the
denominator). The t quantile is found by inverting the t distribution's CDF, written with the regularized
incomplete beta function (continued fraction, as in Numerical Recipes), so any df >= 1 works; for very
large df a Cornish-Fisher expansion around the normal quantile is used instead (error below 1e-9).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

_BIG_DF = 1000.0  # above this, the Cornish-Fisher expansion is used (the continued fraction slows down)


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """``(mean, lo, hi)``: the mean of ``values`` and the two-sided ``level`` Student t interval of the mean.

    One value gives ``(value, None, None)``: there is no spread to build an interval from.

    Raises:
        ValueError: no values, a value that is not a finite number (the message names them), or a level
            outside (0, 1).
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci needs at least one value, got none")
    bad = [(i, v) for i, v in enumerate(xs) if not math.isfinite(v)]
    if bad:
        raise ValueError("mean_ci needs finite values; got " + ", ".join(f"{v!r} at position {i}" for i, v in bad))
    _check_level(level)
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, None, None
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_critical(n - 1, level) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def t_critical(df: float, level: float = 0.95) -> float:
    """The two-sided Student t critical value: ``t`` with ``P(|T| <= t) = level`` for ``df`` degrees of
    freedom (``t_critical(2) == 4.3027...``, ``t_critical(29) == 2.0452...``; tends to 1.95996 as df grows).

    Raises:
        ValueError: ``df`` not a positive finite number, or ``level`` outside (0, 1).
    """
    _check_level(level)
    df = float(df)
    if not (math.isfinite(df) and df > 0):
        raise ValueError(f"degrees of freedom must be a positive finite number, got {df!r}")
    tail = 1.0 - level  # P(|T| > t)
    if df > _BIG_DF:
        return _cornish_fisher(_normal_critical(tail), df)
    # P(|T| > t) = I_x(df/2, 1/2) with x = df / (df + t^2), increasing in x: bisect on x in (0, 1).
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _betainc(0.5 * df, 0.5, mid) < tail:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    return math.sqrt(df * (1.0 - x) / x)


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"the interval's level must be between 0 and 1 (e.g. 0.95), got {level!r}")


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float, iters: int = 2000, eps: float = 1e-15) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iters + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _normal_critical(tail: float) -> float:
    """``z`` with ``P(|Z| > z) = tail`` for a standard normal ``Z`` (bisection on erfc)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.erfc(mid / math.sqrt(2.0)) > tail:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _cornish_fisher(z: float, df: float) -> float:
    """The t quantile from the normal quantile ``z`` (Cornish-Fisher expansion to 1/df^4)."""
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
