"""Fine-tuning π0 on bag2dataset datasets (`pi0-ros train`, see train.py)."""
