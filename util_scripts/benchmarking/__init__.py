"""The measurements of `util_scripts.benchmark` and `util_scripts.benchmark_jobs`, one module per
job, and what both share.

    case          `Case`, one measurement (job, framework, shapes), and how calls are timed
    machine       the processor's description
    frames        synthetic videos: frame folders of moving colour gradients
    reference     the reference's side in PyTorch: its 3D ResNet (tests/torch_reference.py)
                  and its data pipeline (PIL decode, torchvision's operations)
    workloads     the models, random clips and precision contexts of the model jobs
    train         train and profile: a training step, timed, and taken apart by oneDNN
    infer         infer: logits in eval mode
    matmul        the matmul peak
    data          data: the data pipelines, ours beside the reference's
    loader_memory loader_memory: peak memory of the training loader's epochs
    tables        the result tables
"""
