"""Training the bundled models: `ddpm` (a base DDPM with L_simple) and `classifier` (the digits
feature networks), the library side of ddss_train_model and ddss_train_classifier."""
