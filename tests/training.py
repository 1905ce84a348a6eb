"""Real short training runs of the tiny model on the fixtures, shared by the tests (no mocks)."""

from pathlib import Path

import lightning as L

from datamodules.datamodule import TaskDataModule
from lightning_modules.formats import get_format
from lightning_modules.formats.base import FeatureSettings
from lightning_modules.task_module import TaskModule
from sweeps.config import TrainConfig

FIXTURES = Path(__file__).resolve().parents[1] / "datamodules" / "fixtures"
EXAMPLES = Path(__file__).resolve().parents[1] / "sweeps" / "examples"


def sweep_example(name: str, store) -> tuple:
    """Runs sweeps/examples/<name>.yaml into `store` (MLflow URI, Optuna storage, ...); (client, its fit runs)."""
    import mlflow

    from sweeps.config import SweepConfig
    from sweeps.engine.sweep import preflight, run_sweep

    uri, storage = store[0], store[1]
    settings = SweepConfig(storage=storage, tracking_uri=uri)
    run_sweep(preflight(str(EXAMPLES / f"{name}.yaml"), settings), settings)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name).experiment_id
    return client, client.search_runs([experiment], "tags.`xstilts.command` = 'fit'", max_results=1000)


class LossHistory(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train_briefly(task, registry, tiny, steps=150, lr=1e-3, batch_size=16, languages=None, max_length=128,
                  splits=("test",), max_examples=None):
    """Train the tiny model on `task` for `steps` steps; returns (train losses, test scores)."""
    from lightning_modules.encoders import load_encoder

    L.seed_everything(0, verbose=False)
    encoder, tokenizer = load_encoder("tiny-xlmr")  # fresh weights for every run
    fmt = get_format(task.format)
    train_task = registry[task.train_task] if task.train_task else task
    datamodule = TaskDataModule(task, fmt, tokenizer, train_task=train_task, data_dir=FIXTURES,
                                eval_languages=languages, eval_splits=splits,
                                settings=FeatureSettings(max_length=max_length, doc_stride=max_length // 2),
                                batch_size=batch_size, max_train_examples=max_examples,
                                max_eval_examples=max_examples)
    datamodule.setup("fit")
    module = TaskModule(encoder, fmt.build_head(encoder, task, datamodule.labels), fmt, datamodule.labels,
                        tokenizer.pad_token_id, TrainConfig(lr=lr, warmup_ratio=0.05))
    history = LossHistory()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[history], limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return history.losses, module.scores
