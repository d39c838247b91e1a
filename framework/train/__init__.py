"""Training and the run folder it leaves behind.

trainer.py        the training loop (one optimizer step at a time)
answer_weights.py the first answer tokens can count more in the loss
session.py        around the loop: Ctrl+C, periodic checkpoints, NaN stop
checkpoint.py     the resumable checkpoint format (atomic, verified)
run_files.py      the finished run folder's files (atomic writes, weights)
fingerprints.py   every "did it change?" check (recipe, data, tokenizer, plugins, weights)
init_from.py      starting from an earlier run's weights
progress.py       the progress bar / log lines
distributed.py    several processes under torchrun (DDP)
"""
