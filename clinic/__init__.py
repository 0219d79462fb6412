"""The clinicians' work over stored features, never over video: personalise (a child's model from the
clinicians' tags), calibrate (a child's baseline), re-score (bins read again by the active models).

Imports ``affectline``, ``recognition`` (the models), ``pipeline`` (the cue reading against a baseline)
and ``storage`` (feature series, tags, person models). The jobs that run it are ``tasks.clinic``."""
