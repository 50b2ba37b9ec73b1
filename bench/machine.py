# What machine a result came from: cores, CPU model, memory, OS, Python. Stated above every table, because a
# figure without its machine cannot be compared. Reads /proc where it exists; must not know brokers or workloads.
from __future__ import annotations

import os
import platform


def describe() -> dict[str, object]:
    """``cores``, ``cpu_model``, ``memory_gib``, ``os``, ``python`` of this machine."""
    return {
        "cores": os.cpu_count() or 0,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def one_line(m: dict[str, object]) -> str:
    mem = f", {m['memory_gib']:.0f} GiB RAM" if m.get("memory_gib") else ""
    return f"{m['cores']} cores, {m['cpu_model']}{mem}; {m['os']}; {m['python']}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None
