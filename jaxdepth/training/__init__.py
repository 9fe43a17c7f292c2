"""Training library: DenseDepth loss, data, the loop (from scratch, fine-tuning for a plan, distillation)
and the before/after report. The command line is `jaxdepth.cli.train` (``python -m jaxdepth.train``)."""
from .data import ArrayData, TrainingDataError, augment, check_spec, open_data, render_default
from .finetune import RANGES, FinetuneError, check_plan, check_teacher, prepare_student
from .loop import (TARGETS, TRAINABLE, assemble, make_optimizer, make_train_step, save_run, select_trainable,
                   split_variables,
                   train, validate)
from .loss import (clip_straight_through, depth_loss, depth_to_target, image_gradients, raw_range, ssim,
                   teacher_target)
from .report import before_after, format_report, recovered, write_report

__all__ = ["ArrayData", "FinetuneError", "RANGES", "TARGETS", "TRAINABLE", "TrainingDataError", "assemble",
           "augment", "before_after", "clip_straight_through", "check_plan", "check_spec", "check_teacher", "depth_loss", "depth_to_target",
           "format_report", "image_gradients", "make_optimizer", "make_train_step", "open_data", "prepare_student",
           "raw_range", "recovered", "render_default", "save_run", "select_trainable", "split_variables", "ssim", "teacher_target", "train",
           "validate", "write_report"]
