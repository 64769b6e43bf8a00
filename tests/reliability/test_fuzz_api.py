"""Fuzz: schemathesis generates requests from the service's own OpenAPI spec (/docs.json); no 5xx allowed.

Positive cases fit the schema, negative cases break it; both must get 2xx/4xx, never a server error.
The CI run sends about 200 requests; the slow run at least 1,000.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from reliability.results import env_float, record


def _fuzz(api, per_mode: int, derandomize: bool) -> tuple[Counter, list[str], int]:
    schema = schemathesis.openapi.from_url(api.url + "/docs.json", timeout=30)
    statuses: Counter = Counter()
    failures: list[str] = []
    ops = [r.ok() for r in schema.get_all_operations()]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategy = schema.as_strategy(generation_mode=mode)

        @settings(
            max_examples=per_mode,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=derandomize,
        )
        @given(case=strategy)
        def send(case):
            r = case.call(base_url=api.url, headers=api.headers, timeout=60)
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append(
                    f"{case.method} {case.path} body={str(case.body)[:300]!r} -> {r.status_code} {r.text[:300]!r}"
                )

        send()
    return statuses, failures, len(ops)


def _check(api, per_mode: int, name: str, derandomize: bool = False) -> None:
    statuses, failures, n_ops = _fuzz(api, per_mode, derandomize)
    total = sum(statuses.values())
    record(
        name,
        not failures and total >= per_mode,
        requests=total,
        operations=n_ops,
        statuses={str(k): v for k, v in sorted(statuses.items())},
        server_errors=len(failures),
        examples=failures[:3],
    )
    assert total >= per_mode, f"only {total} requests were sent"
    assert not failures, f"{len(failures)} server errors, e.g.\n" + "\n".join(failures[:5])


def test_fuzz_openapi_short(api):
    """~200 schema-generated requests (positive and negative): no 5xx.

    Derandomized so CI is reproducible; the slow run draws new cases each time.
    """
    _check(api, 100, "fuzz_openapi_short", derandomize=True)


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(1200)
def test_fuzz_openapi_1000(api):
    """At least 1,000 schema-generated requests (positive and negative): no 5xx."""
    per_mode = int(env_float("SIYU_REL_FUZZ_PER_MODE", 600))
    _check(api, per_mode, "fuzz_openapi")
