"""Training loops: `loop` (the one resumable loop: checkpoints, agreed stops, NaN stop,
summaries, progress) that the search and the DDPM trainer both run on; `ddpm` (a base DDPM
with L_simple) and `classifier` (the digits feature networks), the library side of
ddss_train_model and ddss_train_classifier."""
