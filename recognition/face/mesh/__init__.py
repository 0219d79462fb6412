"""MediaPipe's FaceLandmarker (detector, face mesh v2, blendshapes, pose) in torch, batched.

``tflite_reader`` turns face_landmarker.task's TFLite graphs into plain data (CPU side,
needs ``tflite``), ``weights`` caches that as a torch file, ``graph`` runs a graph in
torch, ``geometry`` computes the pose matrix, ``landmarker`` ties them to face boxes.
"""
