"""The pipeline around the model, one sub-package per concern, in layer order (a package may
import from the ones before it, never from the ones after; tests/unit/test_layers.py checks):

    common    config loading, the Ray connection, Ray Data tuning: what several rooms share
    data      feature spec, id mapping, validation, collate, Batch, the reader, synthetic logs
    train     losses, metrics, sharding, the sharded model, checkpoints, the worker loop, export
    registry  model versions, their storage (path or URL), the retrain lock
    score     offline batch scoring: config, plan, run, actor, output, allocator
    retrain   the daily job: config, the eval gate, the run
    report    the multi-task comparison and its report

Nothing here parses command lines (that is `jobs/`), and `ple_model/` never imports it.
The sub-packages' `__init__` files import nothing: `import pipeline.score.run` on a driver
pulls in neither torchrec nor the training loop.
"""
