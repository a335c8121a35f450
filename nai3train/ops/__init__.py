"""Code that moves, logs, stores or shows what training makes — and cannot change a trained weight.

MLflow tracking and its outage journal, progress bars, atomic file writes, secrets redaction, thread
settings, checkpoint transport, the MLflow run around a training. Everything here is outside the
training identity (``flows/identity.py``): an edit here never retrains. The numerics fingerprint
(``flows/fingerprint.py``) catches an edit here that changes numbers after all.
"""
