"""Who each track of a new analysis is: ``identity.resolve.resolve(tracks, roster)``.

Pure functions over the pipeline's tracks and a roster read by the caller (``tasks.store``): the
human corrections of the session (``overrides``), the group's enrolled persons matched by face
embedding (``recognition.tracking.assign_to_persons``), and what stays unclaimed, which the writer
stores as a new 'Unknown N'. Imports ``affectline`` and ``recognition`` only; no database."""
