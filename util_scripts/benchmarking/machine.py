"""The processor the measurements ran on, for the first line of each benchmark's output."""
import platform
from pathlib import Path

# instruction sets that decide the speed of the convolutions, as /proc/cpuinfo names them
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16')


def cpu_description() -> str:
    """'MODEL (flags: ...)' from /proc/cpuinfo, or the platform's word for the processor."""
    try:
        info = Path('/proc/cpuinfo').read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(':', 1) for line in info.splitlines()[:40] if ':' in line)
    model = fields.get('model name\t', '').strip() or platform.machine()
    flags = set(fields.get('flags\t\t', '').split())
    return f'{model} ({" ".join(f for f in ISA_FLAGS if f in flags) or "no AVX2"})'
