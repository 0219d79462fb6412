"""Academic emotions (Neutrality, Enjoyment, Confusion, Fatigue, Distraction) and engagement.

``cues``: the interpretable, offline default (no weights); ``clip_caer``: the CLIP-CAER
model, used when a trained checkpoint is configured. Nothing here is imported eagerly,
so importing this package never pulls in torch.
"""
