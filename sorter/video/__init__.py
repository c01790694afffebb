"""Faces in video: tracks across frames, identities voted per track (:mod:`.track`), and the live
loop that reads a camera, a stream or a file (:mod:`.live`)."""
