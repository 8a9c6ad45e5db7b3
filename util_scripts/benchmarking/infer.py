"""The infer job: logits of random clips in eval mode without gradients, on both sides."""
from .case import Case, time_calls
from .workloads import (paddle_flops_per_clip, paddle_model, paddle_precision, random_batch,
                        torch_model, torch_precision, torch_setup)


def paddle_infer(case: Case) -> dict:
    import inference
    model = paddle_model(case)
    flops = paddle_flops_per_clip(model, case)
    clips, _ = random_batch(case)
    logits = inference.make_logits_fn(model, clips, case.backend)
    precision = paddle_precision(case)

    def forward():
        with precision():
            return logits(clips)
    return dict(time_calls(forward, case.warmup, case.repeats), flops_per_clip=flops)


def torch_infer(case: Case) -> dict:
    torch = torch_setup(case)
    model = torch_model(case).eval()
    clips = torch.from_numpy(random_batch(case)[0])
    precision = torch_precision(torch, case)

    def forward():
        with torch.no_grad(), precision:
            return model(clips).float().numpy()
    return time_calls(forward, case.warmup, case.repeats)
