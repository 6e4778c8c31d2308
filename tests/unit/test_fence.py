"""The fence around Faust: the fast path's upstream code is pinned, and a change is caught."""

from __future__ import annotations

import inspect

from streams.runtime import batch, fastpath, fence, monitor


def test_the_installed_faust_and_aiokafka_match_what_the_fast_path_was_checked_against() -> None:
    assert fence.fence_problems() == []


def test_a_changed_upstream_method_is_reported_with_what_to_recheck() -> None:
    target = "faust.transport.consumer:Consumer.ack"
    changed = fence.source_of(target).replace("return", "return  ", 1)
    problems = fence.fence_problems(sources={target: changed})
    assert len(problems) == 1
    assert problems[0].startswith(target) and "Re-check" in problems[0] and "fence.py" in problems[0]


def test_another_faust_version_is_reported_naming_the_setting_that_avoids_the_fast_path() -> None:
    problems = fence.fence_problems(versions={"faust-streaming": "0.16.0", "aiokafka": "0.14.0"})
    assert len(problems) == 1 and "faust-streaming is 0.16.0" in problems[0]
    assert "CROSSSELL_FAST_PATH=false" in problems[0]


def test_every_upstream_method_the_fast_path_overrides_is_guarded() -> None:
    overridden = set()
    classes = [cls for module in (fastpath, batch, monitor) for _, cls in inspect.getmembers(module, inspect.isclass)
               if cls.__module__ == module.__name__]
    assert len(classes) >= 6
    for cls in classes:
        for name, value in vars(cls).items():
            if not callable(value) or inspect.isclass(value) or name.startswith("__"):
                continue
            for base in cls.__mro__[1:]:
                if name in vars(base) and not base.__module__.startswith("streams"):
                    overridden.add(f"{base.__module__}:{base.__qualname__}.{name}")
                    break
    missing = overridden - set(fence.GUARDED)
    assert not missing, f"overridden but not pinned in streams/runtime/fence.py: {sorted(missing)}"
