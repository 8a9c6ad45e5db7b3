"""The benchmark's tables: clips/s of the model jobs (with GFLOP/s, % of the matmul peak and the
ratio to PyTorch) and the profile's milliseconds, in markdown."""
import statistics
from typing import List

from .case import Case

NOT_IN_TABLE = ('matmul', 'loader_memory', 'data', 'profile')  # jobs with tables of their own


def markdown_table(header: List[str], lines: List[list]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    out = ['| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |',
           '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    out += ['| ' + ' | '.join(str(x).ljust(w) for x, w in zip(line, widths)) + ' |'
            for line in lines]
    return '\n'.join(out)


def clips_per_second(case: Case, result: dict) -> List[float]:
    clips = result.get('clips_per_call', case.batch_size)
    return [clips / s for s in result['seconds']]


def make_rows(cases: List[Case], results: List[dict]) -> tuple:
    """Table rows with clips/s (median and range), GFLOP/s, % of the matmul peak, ratio to
    torch; and the peak (GFLOP/s, or None)."""
    peaks = [r['flops'] / min(r['seconds']) / 1e9
             for c, r in zip(cases, results) if c.job == 'matmul' and 'error' not in r]
    peak = max(peaks, default=None)
    torch_speed = {}
    rows = []
    for case, result in zip(cases, results):
        if case.job in NOT_IN_TABLE:
            continue
        row = dict(job=case.job, model=f'R3D-{case.depth}' if case.depth else '-',
                   impl=f'{case.impl} {case.backend}', dtype=case.dtype,
                   error=result.get('error'), peak_rss=result.get('peak_rss'))
        if row['error'] is None:
            speeds = clips_per_second(case, result)
            row.update(speed=statistics.median(speeds), low=min(speeds), high=max(speeds),
                       step_rss=result['peak_rss'] - result['base_rss'])
            flops = result.get('flops_per_clip')
            if flops is None:  # torch rows: the same architecture as Paddle's of that depth
                flops = next((r.get('flops_per_clip') for c, r in zip(cases, results)
                              if c.job == case.job and c.depth == case.depth
                              and r.get('flops_per_clip')), None)
            if flops:
                row['gflops'] = row['speed'] * flops / 1e9
                if peak:
                    row['of_peak'] = row['gflops'] / peak
            if case.impl == 'torch':
                torch_speed[case.job, case.depth, case.dtype] = row['speed']
        rows.append(row)
    for row, case in zip(rows, [c for c in cases if c.job not in NOT_IN_TABLE]):
        reference = torch_speed.get((case.job, case.depth, case.dtype))
        if reference and row.get('speed') and case.impl == 'paddle':
            row['ratio'] = row['speed'] / reference
    for case, result in zip(cases, results):
        if case.job == 'data':
            rows += data_rows(result)
    return rows, peak


def data_rows(result: dict) -> List[dict]:
    """The training pipeline's rows of the data job in the main table: ours and the
    reference's (the data table has the rest)."""
    base = dict(job='data', model='-', error=result.get('error'),
                peak_rss=result.get('peak_rss'))
    if 'peak_rss' in result and 'base_rss' in result:
        base['step_rss'] = result['peak_rss'] - result['base_rss']
    if base['error'] is not None:
        return [dict(base, impl='paddle project')]
    rows = []
    for side, impl in (('ours', 'paddle project'), ('reference', 'torch reference')):
        speeds = result['train'].get(side)
        if speeds:
            rows.append(dict(base, impl=impl, speed=statistics.median(speeds), low=min(speeds),
                             high=max(speeds)))
    if len(rows) == 2:
        rows[0]['ratio'] = rows[0]['speed'] / rows[1]['speed']
    return rows


def format_table(rows: List[dict]) -> str:
    header = ['job', 'model', 'impl', 'dtype', 'clips/s', 'range', 'vs torch', 'GFLOP/s',
              '% peak', 'peak RSS MB', 'job RSS MB']
    lines = []
    for r in rows:
        dtype = r.get('dtype', '')
        if r['error']:
            lines.append([r['job'], r['model'], r['impl'], dtype, 'error: ' + r['error']]
                         + [''] * 6)
            continue
        lines.append([r['job'], r['model'], r['impl'], dtype, f'{r["speed"]:.2f}',
                      f'{r["low"]:.2f}-{r["high"]:.2f}',
                      f'{r["ratio"]:.2f}x' if 'ratio' in r else '',
                      f'{r["gflops"]:.0f}' if 'gflops' in r else '',
                      f'{100 * r["of_peak"]:.0f}%' if 'of_peak' in r else '',
                      f'{r["peak_rss"]:.0f}', f'{r["step_rss"]:.0f}'])
    return markdown_table(header, lines)


def format_profile(cases: List[Case], results: List[dict], columns: List[str]) -> str:
    """The profile job's table: where a training step's milliseconds go (`columns`), ours
    beside PyTorch's."""
    lines = []
    for case, result in zip(cases, results):
        if case.job != 'profile':
            continue
        cells = [f'R3D-{case.depth}', case.dtype, f'{case.impl} {case.backend}']
        if 'error' in result:
            cells += [result['error']] + [''] * len(columns)
        else:
            cells += [f'{result["step_ms"]:.0f}', *(f'{result["groups"][column]:.0f}'
                                                    for column in columns)]
        lines.append(cells)
    return markdown_table(['model', 'dtype', 'impl', 'step ms', *columns], lines)
