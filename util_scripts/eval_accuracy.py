"""Top-k video accuracy of an inference result against an annotation json.

    python -m util_scripts.eval_accuracy GT.json RESULT.json [--subset validation] [-k 1]
        [--ignore] [--save] [--per_class]

(`--ground_truth_path GT.json --result_path RESULT.json --k 1` is the same.) The ground truth is
every labelled video of `--subset` in the annotation json; the result is the json written by
`main.py --inference`: `{"results": {video_id: [{"label": name, "score": s}, ...]}}`. A video is
right when its label is among its k best-scored labels. Ground-truth videos missing from the
result count as wrong, or are left out of the denominator with `--ignore`.

`--save` writes `top{k}.txt` beside RESULT.json: one line, the accuracy as a fraction in [0, 1]
(as the reference writes it), e.g. `0.8125`.
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

from utils import UserError, run_cli


def read_json(path: Path, what: str) -> dict:
    try:
        with path.open() as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise UserError(f'{what} not found: {path}') from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f'{what} {path} is not valid json: {e}') from e
    if not isinstance(data, dict):
        raise UserError(f'{what} {path} is not a json object')
    return data


def get_class_labels(data: dict) -> Dict[str, int]:
    return {label: index for index, label in enumerate(data['labels'])}


def load_ground_truth(ground_truth_path: Path,
                      subset: str) -> Tuple[List[Tuple[str, int]], List[str]]:
    """(video_id, class index) of the labelled videos of `subset`, and the class names."""
    data = read_json(ground_truth_path, 'ground-truth json')
    if 'labels' not in data or 'database' not in data:
        raise UserError(f'ground-truth json {ground_truth_path} has no "labels" and "database"')
    class_labels_map = get_class_labels(data)
    ground_truth = []
    for video_id, value in data['database'].items():
        label = value.get('annotations', {}).get('label')
        if value.get('subset') != subset or label is None:
            continue
        if label not in class_labels_map:
            raise UserError(f'{ground_truth_path}: video {video_id} has label {label!r}, '
                            'which is not in "labels"')
        ground_truth.append((video_id, class_labels_map[label]))
    if not ground_truth:
        subsets = sorted({str(v.get('subset')) for v in data['database'].values()})
        raise UserError(f'{ground_truth_path} has no labelled videos in subset {subset!r} '
                        f'(its subsets: {", ".join(subsets) or "none"})')
    return ground_truth, data['labels']


def load_result(result_path: Path, top_k: int,
                class_labels_map: Dict[str, int]) -> Dict[str, tuple]:
    """video_id -> the class indices of its `top_k` best-scored labels, best first."""
    data = read_json(result_path, 'result json')
    if not isinstance(data.get('results'), dict):
        raise UserError(f'result json {result_path} has no "results" object '
                        '(expected {"results": {video_id: [{"label", "score"}, ...]}})')
    result = {}
    for video_id, entries in data['results'].items():
        if not isinstance(entries, list):
            raise UserError(f'{result_path}: video {video_id}: expected a list of '
                            '{"label", "score"} entries')
        if entries and 'result' in entries[0]:
            raise UserError(f'{result_path} holds per-segment results (inference with '
                            '--inference_no_average); video accuracy needs averaged ones')
        try:
            scored = sorted(((class_labels_map[e['label']], e['score']) for e in entries),
                            key=lambda x: x[1], reverse=True)
        except KeyError as e:
            raise UserError(f'{result_path}: video {video_id}: label {e} is not in the '
                            'ground truth\'s "labels" (or an entry lacks "label"/"score")') from e
        result[video_id] = tuple(label for label, _ in scored[:top_k])
    return result


def count_correct(ground_truth: List[Tuple[str, int]], result: Dict[str, tuple],
                  ignore: bool) -> Dict[int, List[int]]:
    """Per class index: [n_correct, n_counted]; missing videos count as wrong unless `ignore`."""
    counts = {}
    for video_id, label in ground_truth:
        if ignore and video_id not in result:
            continue
        correct, total = counts.get(label, (0, 0))
        counts[label] = [correct + (label in result.get(video_id, ())), total + 1]
    return counts


def evaluate(ground_truth_path: Path, result_path: Path, subset: str, top_k: int,
             ignore: bool, per_class: bool = False) -> float:
    """Print the top-k accuracy (and per-class accuracies) and return it."""
    ground_truth, labels = load_ground_truth(ground_truth_path, subset)
    result = load_result(result_path, top_k, get_class_labels({'labels': labels}))
    n_missing = sum(video_id not in result for video_id, _ in ground_truth)
    print(f'ground truth: {len(ground_truth)} videos of subset {subset!r} in {ground_truth_path}')
    print(f'result: {len(result)} videos in {result_path}')
    note = ''
    if n_missing:
        note = (' (left out: --ignore)' if ignore
                else ' (counted as wrong; --ignore leaves them out)')
    print(f'missing from the result: {n_missing} of {len(ground_truth)} ground-truth videos{note}')

    counts = count_correct(ground_truth, result, ignore)
    n_correct = sum(c for c, _ in counts.values())
    n_total = sum(t for _, t in counts.values())
    if n_total == 0:
        raise UserError(f'none of the {len(ground_truth)} ground-truth videos of subset '
                        f'{subset!r} is in {result_path}')
    if per_class:
        print(f'per-class top-{top_k} accuracy:')
        width = max(len(labels[i]) for i in counts)
        for index in sorted(counts):
            correct, total = counts[index]
            print(f'  {labels[index]:<{width}}  {correct / total:.4f} ({correct}/{total})')
    accuracy = n_correct / n_total
    print(f'top-{top_k} accuracy: {accuracy:.4f} ({n_correct}/{n_total} videos)')
    return accuracy


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.eval_accuracy',
                                     description='Top-k video accuracy of an inference result.')
    parser.add_argument('ground_truth', type=Path, nargs='?', metavar='ground_truth_path',
                        help='annotation json (or --ground_truth_path)')
    parser.add_argument('result', type=Path, nargs='?', metavar='result_path',
                        help='result json of main.py --inference (or --result_path)')
    parser.add_argument('--ground_truth_path', type=Path, help='same as ground_truth_path')
    parser.add_argument('--result_path', type=Path, help='same as result_path')
    parser.add_argument('-k', '--k', type=int, default=1, help='k of top-k (default 1)')
    parser.add_argument('--subset', default='validation', help='subset of the ground truth')
    parser.add_argument('--save', action='store_true', help='write top{k}.txt beside the result')
    parser.add_argument('--ignore', action='store_true',
                        help='leave ground-truth videos missing from the result out of the count')
    parser.add_argument('--per_class', action='store_true', help='also print per-class accuracy')
    args = parser.parse_args(argv)
    for name in ('ground_truth', 'result'):
        positional, option = getattr(args, name), getattr(args, f'{name}_path')
        if positional and option and positional != option:
            parser.error(f'{name}_path given twice: {positional} and --{name}_path {option}')
        if not (positional or option):
            parser.error(f'the {name.replace("_", "-")} json is required '
                         f'(as an argument or --{name}_path)')
        setattr(args, f'{name}_path', positional or option)
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    if args.k < 1:
        raise UserError(f'-k must be at least 1, got {args.k}')
    accuracy = evaluate(args.ground_truth_path, args.result_path, args.subset, args.k,
                        args.ignore, args.per_class)
    if args.save:
        save_path = args.result_path.parent / f'top{args.k}.txt'
        save_path.write_text(f'{accuracy}\n')
        print(f'saved to {save_path}')
    return accuracy


if __name__ == '__main__':
    run_cli(main)
