"""Training prompts on real tasks: heads, the loop, evaluation, tiny checkpoints, prediction on
new text, and multi-process runs under torchrun. (PEFT adapters: interop/.)"""
from .checkpoint import load_checkpoint, read_meta, save_checkpoint
from .evaluate import evaluate, predict_batches
from .heads import Head, TaskModel, task_loss
from .predict import Predictor
from .tasks import TASKS, TRAIN_METHODS, build_task_model, get_task, set_trainable, start_text
from .trainer import Alternate, TrainConfig, fit, set_seed

__all__ = ["Head", "TaskModel", "task_loss", "TASKS", "TRAIN_METHODS", "build_task_model", "get_task",
           "set_trainable", "start_text", "TrainConfig", "Alternate", "fit", "set_seed", "evaluate", "predict_batches",
           "save_checkpoint", "load_checkpoint", "read_meta", "Predictor"]
