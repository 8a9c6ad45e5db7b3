"""Draw loss, accuracy and learning rate against epoch from the logs of one or more runs.

    python -m util_scripts.plot_logs RESULT_DIR... [--output curves.png]

Reads `train.log` (epoch loss acc lr) and `val.log` (epoch loss acc) of every result folder
(either may be missing, e.g. with --no_val) and draws one PNG of three panels: loss and accuracy
(training solid, validation dashed; validation accuracy is per clip) and the learning rate
(log scale). Each run has its own colour, so several folders compare runs. The PNG goes to
RESULT_DIR/curves.png for one run, to ./curves.png for several, or to --output.

matplotlib is an optional extra: pip install matplotlib.
"""
import argparse
import csv
from pathlib import Path
from typing import Dict, List, Optional

from utils import UserError, run_cli

# log file -> the columns drawn from it (main.py writes more in train_batch.log, not drawn here)
LOGS = {'train': ('train.log', ('epoch', 'loss', 'acc', 'lr')),
        'val': ('val.log', ('epoch', 'loss', 'acc'))}
FIGURE_SIZE = (15, 4.5)  # inches; at DPI, a 1500 x 450 PNG
DPI = 100

Log = Dict[str, List[float]]  # column -> values, one per epoch


def read_log(path: Path, columns: tuple) -> Optional[Log]:
    """The `columns` of a tab-separated log as floats; None when the file does not exist."""
    if not path.is_file():
        return None
    with path.open(newline='') as f:
        reader = csv.DictReader(f, delimiter='\t')
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f'{path} has no column {", ".join(missing)} (not a main.py log?)')
        log = {c: [] for c in columns}
        for line_number, row in enumerate(reader, start=2):
            try:
                values = [float(row[c]) for c in columns]
            except (TypeError, ValueError) as e:
                raise UserError(f'{path} line {line_number}: {e}') from e
            for column, value in zip(columns, values):
                log[column].append(value)
    return log


def read_run(result_dir: Path) -> Dict[str, Log]:
    """{'train': log, 'val': log} of a result folder; logs that are absent or empty are left out."""
    if not result_dir.is_dir():
        raise UserError(f'result folder not found: {result_dir}')
    logs = {}
    for phase, (name, columns) in LOGS.items():
        log = read_log(result_dir / name, columns)
        if log and log['epoch']:
            logs[phase] = log
    if not logs:
        raise UserError(f'{result_dir}: no epochs in train.log or val.log yet')
    return logs


def new_figure():
    """An empty matplotlib Figure (no pyplot, so no display is needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError('plot_logs draws with matplotlib: pip install matplotlib') from e
    return Figure(figsize=FIGURE_SIZE, dpi=DPI, layout='constrained')


def plot_run(axes, name: str, logs: Dict[str, Log], colour: str) -> None:
    """One run's curves on the (loss, accuracy, learning rate) axes."""
    loss_axes, acc_axes, lr_axes = axes
    for phase, style in (('train', '-'), ('val', '--')):
        if phase in logs:
            log = logs[phase]
            for ax, column in ((loss_axes, 'loss'), (acc_axes, 'acc')):
                ax.plot(log['epoch'], log[column], style, color=colour, marker='.',
                        label=f'{name} {phase}')
    if 'train' in logs:
        lr_axes.plot(logs['train']['epoch'], logs['train']['lr'], color=colour, marker='.',
                     label=name)


def plot_runs(runs: Dict[str, Dict[str, Log]], output: Path) -> None:
    """Loss, accuracy and learning rate of every run, one colour per run, as one PNG."""
    figure = new_figure()
    axes = figure.subplots(1, 3)
    for index, (name, logs) in enumerate(runs.items()):
        plot_run(axes, name, logs, colour=f'C{index}')
    for ax, title in zip(axes, ('loss', 'accuracy', 'learning rate')):
        ax.set_title(title)
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize='small')
    axes[1].set_ylim(-0.02, 1.02)
    if axes[2].lines:
        axes[2].set_yscale('log')  # the schedulers divide the rate by 10
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)


def default_output(result_dirs: List[Path]) -> Path:
    return result_dirs[0] / 'curves.png' if len(result_dirs) == 1 else Path('curves.png')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m util_scripts.plot_logs',
        description='Plot loss, accuracy and learning rate of main.py runs against epoch.')
    parser.add_argument('result_dirs', nargs='+', type=Path, metavar='RESULT_DIR',
                        help='result folder of a run (train.log, val.log)')
    parser.add_argument('--output', type=Path, default=None,
                        help='PNG to write (default: RESULT_DIR/curves.png for one run, '
                             'curves.png for several)')
    args = parser.parse_args(argv)
    runs = {str(path): read_run(path) for path in args.result_dirs}
    output = args.output or default_output(args.result_dirs)
    plot_runs(runs, output)
    print(f'curves of {len(runs)} run{"s" if len(runs) > 1 else ""}: {output}')


if __name__ == '__main__':
    run_cli(main)
