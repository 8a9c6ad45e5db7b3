"""Clip-level inference, averaged per video, written as the reference's result json."""
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm


def get_video_results(scores: np.ndarray, class_names: Dict[int, str], output_topk: int) -> List[dict]:
    """The `output_topk` best classes of one score vector, best first, as {label, score}."""
    k = min(output_topk, len(class_names))
    order = np.argsort(-scores, kind='stable')[:k]
    return [{'label': class_names[int(i)], 'score': float(scores[i])} for i in order]


def inference(data_loader, model, result_path: Path, class_names: Dict[int, str],
              no_average: bool, output_topk: int) -> dict:
    """Softmax every clip, average over each video's clips (unless `no_average`), write json.

    The json is `{"results": {video_id: [{"label", "score"}, ...]}}`, or with `no_average`
    `{"results": {video_id: [{"segment": [begin, end], "result": [...]}, ...]}}`.
    """
    model.eval()
    clip_scores = defaultdict(list)  # video_id -> [(segment, scores [n_classes])]
    with paddle.no_grad():
        for inputs, targets in tqdm(data_loader, desc='inference', leave=False, dynamic_ncols=True):
            scores = F.softmax(model(inputs), axis=1).numpy()
            for (video_id, segment), video_scores in zip(targets, scores):
                clip_scores[video_id].append((list(segment), video_scores))

    results = {}
    for video_id, clips in clip_scores.items():
        if no_average:
            results[video_id] = [{'segment': segment,
                                  'result': get_video_results(s, class_names, output_topk)}
                                 for segment, s in clips]
        else:
            mean = np.mean([s for _, s in clips], axis=0)
            results[video_id] = get_video_results(mean, class_names, output_topk)
    inference_results = {'results': results}
    with Path(result_path).open('w') as f:
        json.dump(inference_results, f)
    return inference_results
