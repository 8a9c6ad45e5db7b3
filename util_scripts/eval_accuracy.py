"""Top-k video accuracy of an inference result against an annotation json.

    python -m util_scripts.eval_accuracy GT.json RESULT.json [--subset validation] [-k 1]
        [--ignore] [--save] [--per_class]

(`--ground_truth_path GT.json --result_path RESULT.json --k 1` is the same.) The ground truth is
every labelled video of `--subset` in the annotation json; the result is the json written by
`main.py --inference`: `{"results": {video_id: [{"label": name, "score": s}, ...]}}`. A video is
right when its label is among its k best-scored labels. Ground-truth videos missing from the
result count as wrong, or are left out of the denominator with `--ignore`.

A result of `main.py --inference --inference_no_average` holds every clip instead,
`{video_id: [{"segment": [first, last + 1], "result": [{"label", "score"}, ...]}, ...]}`: then
the clip accuracy (each clip's top-k against its video's label, over the clips in the result)
and the video accuracy (the clip scores averaged per video, then its top-k, as --inference
averages them) are printed side by side. A label missing from a clip's list (inference with
`--output_topk N` keeps N per clip) counts as a score of 0 in that average; `--output_topk 0`
keeps every class and makes the average exact.

`--save` writes `top{k}.txt` beside RESULT.json: one line, the video accuracy as a fraction in
[0, 1] (as the reference writes it), e.g. `0.8125`.
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

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


def load_ground_truth(ground_truth_path: Path, subset: str,
                      source: Optional[str] = None) -> Tuple[List[Tuple[str, int]], List[str]]:
    """(video_id, class index) of the labelled videos of `subset` (of `source` only, in a
    merged annotation, when given), and the class names."""
    data = read_json(ground_truth_path, 'ground-truth json')
    if 'labels' not in data or 'database' not in data:
        raise UserError(f'ground-truth json {ground_truth_path} has no "labels" and "database"')
    class_labels_map = get_class_labels(data)
    ground_truth = []
    for video_id, value in data['database'].items():
        label = value.get('annotations', {}).get('label')
        if value.get('subset') != subset or label is None:
            continue
        if source is not None and value.get('source') != source:
            continue
        if label not in class_labels_map:
            raise UserError(f'{ground_truth_path}: video {video_id} has label {label!r}, '
                            'which is not in "labels"')
        ground_truth.append((video_id, class_labels_map[label]))
    if not ground_truth and source is not None:
        names = ', '.join(str(s.get('name')) for s in data.get('sources', [])
                          if isinstance(s, dict)) or 'none'
        raise UserError(f'{ground_truth_path} has no labelled videos of source {source!r} in '
                        f'subset {subset!r} (its sources: {names})')
    if not ground_truth:
        subsets = sorted({str(v.get('subset')) for v in data['database'].values()})
        raise UserError(f'{ground_truth_path} has no labelled videos in subset {subset!r} '
                        f'(its subsets: {", ".join(subsets) or "none"})')
    return ground_truth, data['labels']


def ranked(entries: List[dict], class_labels_map: Dict[str, int], where: str) -> List[tuple]:
    """(class index, score) of `{"label", "score"}` entries, best first (ties: listed order)."""
    try:
        scored = [(class_labels_map[e['label']], e['score']) for e in entries]
    except (KeyError, TypeError) as e:
        raise UserError(f'{where}: label {e} is not in the ground truth\'s "labels" (or an entry '
                        'lacks "label"/"score")') from e
    return sorted(scored, key=lambda x: x[1], reverse=True)


class Result(NamedTuple):
    videos: Dict[str, tuple]  # video_id -> the class indices of its top-k, best first
    clips: Optional[Dict[str, List[tuple]]]  # per-clip results: the top-k of each clip
    truncated: bool  # some clip lists fewer labels than there are classes


def load_result(result_path: Path, top_k: int, class_labels_map: Dict[str, int]) -> Result:
    """The top-k classes of every video of the result json, and of every clip when it holds
    per-clip results (--inference_no_average; the video's are then of the averaged clips)."""
    data = read_json(result_path, 'result json')
    if not isinstance(data.get('results'), dict):
        raise UserError(f'result json {result_path} has no "results" object '
                        '(expected {"results": {video_id: [{"label", "score"}, ...]}})')
    kinds = set()
    videos, clips, truncated = {}, {}, False
    for video_id, entries in data['results'].items():
        where = f'{result_path}: video {video_id}'
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UserError(f'{where}: expected a list of {{"label", "score"}} entries, or of '
                            '{"segment", "result"} entries')
        per_clip = bool(entries) and all('result' in e for e in entries)
        kinds.add(per_clip)
        if len(kinds) > 1:
            raise UserError(f'{result_path} mixes averaged and per-segment results ({video_id})')
        if not per_clip:
            videos[video_id] = tuple(i for i, _ in ranked(entries, class_labels_map, where)[:top_k])
            continue
        total = {}  # class index -> sum of its clip scores
        clips[video_id] = []
        for entry in entries:
            scored = ranked(entry['result'], class_labels_map,
                            f'{where} segment {entry.get("segment")}')
            truncated |= len(scored) < len(class_labels_map)
            clips[video_id].append(tuple(i for i, _ in scored[:top_k]))
            for index, score in scored:
                total[index] = total.get(index, 0.0) + score
        videos[video_id] = tuple(i for i, _ in sorted(total.items(), key=lambda x: x[1],
                                                      reverse=True)[:top_k])
    return Result(videos, clips if kinds == {True} else None, truncated)


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


def count_correct_clips(ground_truth: List[Tuple[str, int]],
                        clips: Dict[str, List[tuple]]) -> Dict[int, List[int]]:
    """Per class index: [n_correct, n_counted] over the clips of the ground-truth videos."""
    counts = {}
    for video_id, label in ground_truth:
        for top in clips.get(video_id, []):
            correct, total = counts.get(label, (0, 0))
            counts[label] = [correct + (label in top), total + 1]
    return counts


def ratio(counts: Dict[int, List[int]], index: Optional[int] = None) -> Tuple[float, int, int]:
    """(accuracy, correct, total) of one class, or of all with `index` None."""
    pairs = [counts[index]] if index is not None else counts.values()
    correct, total = sum(c for c, _ in pairs), sum(t for _, t in pairs)
    return (correct / total if total else 0.0), correct, total


def evaluate(ground_truth_path: Path, result_path: Path, subset: str, top_k: int,
             ignore: bool, per_class: bool = False, source: Optional[str] = None) -> float:
    """Print the top-k accuracy (and per-class accuracies) and return it (the video accuracy;
    per-clip results also print the clip accuracy)."""
    ground_truth, labels = load_ground_truth(ground_truth_path, subset, source)
    result = load_result(result_path, top_k, get_class_labels({'labels': labels}))
    n_missing = sum(video_id not in result.videos for video_id, _ in ground_truth)
    of_source = '' if source is None else f' of source {source!r}'
    print(f'ground truth: {len(ground_truth)} videos{of_source} of subset {subset!r} in '
          f'{ground_truth_path}')
    if result.clips is None:
        print(f'result: {len(result.videos)} videos in {result_path}')
    else:
        n_clips = sum(map(len, result.clips.values()))
        print(f'result: {len(result.videos)} videos, {n_clips} clips (not averaged: '
              f'--inference_no_average) in {result_path}')
        if result.truncated:
            print('note: clips list only their top classes (--output_topk); a class a clip does '
                  'not list counts as 0 in its video\'s average')
    note = ''
    if n_missing:
        note = (' (left out: --ignore)' if ignore
                else ' (counted as wrong; --ignore leaves them out)')
    print(f'missing from the result: {n_missing} of {len(ground_truth)} ground-truth videos{note}')

    counts = count_correct(ground_truth, result.videos, ignore)
    accuracy, n_correct, n_total = ratio(counts)
    if n_total == 0:
        raise UserError(f'none of the {len(ground_truth)} ground-truth videos of subset '
                        f'{subset!r} is in {result_path}')
    clip_counts = None if result.clips is None else count_correct_clips(ground_truth, result.clips)
    if per_class:
        print(f'per-class top-{top_k} accuracy:')
        width = max(len(labels[i]) for i in counts)
        for index in sorted(counts):
            video = '{:.4f} ({}/{})'.format(*ratio(counts, index))
            if clip_counts is None:
                print(f'  {labels[index]:<{width}}  {video}')
            else:
                clip = ('{:.4f} ({}/{})'.format(*ratio(clip_counts, index))
                        if index in clip_counts else '- (no clips)')
                print(f'  {labels[index]:<{width}}  clip {clip}  video {video}')
    if clip_counts is None:
        print(f'top-{top_k} accuracy: {accuracy:.4f} ({n_correct}/{n_total} videos)')
    else:
        clip_accuracy, clip_correct, clip_total = ratio(clip_counts)
        print(f'top-{top_k} accuracy: clip {clip_accuracy:.4f} ({clip_correct}/{clip_total} '
              f'clips)  video {accuracy:.4f} ({n_correct}/{n_total} videos, clip scores averaged)')
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
    parser.add_argument('--source', default=None,
                        help='a merged annotation (util_scripts.merge_json): the videos of this '
                             'source only')
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
                        args.ignore, args.per_class, args.source)
    if args.save:
        save_path = args.result_path.parent / f'top{args.k}.txt'
        save_path.write_text(f'{accuracy}\n')
        print(f'saved to {save_path}')
    return accuracy


if __name__ == '__main__':
    run_cli(main)
