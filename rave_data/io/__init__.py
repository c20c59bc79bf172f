"""Reading audio files: find them (:mod:`~rave_data.io.discover`), read their
header facts (:mod:`~rave_data.io.probe`, with the header readers
:mod:`~rave_data.io.wav_header` and :mod:`~rave_data.io.mp3_frames`) and
stream their samples (:mod:`~rave_data.io.decode`, through the decoders
:mod:`~rave_data.io.decoder_choice` picks, :mod:`~rave_data.io.pyav_reader`
among them). Every reader speaks :class:`~rave_data.io.audioinfo.AudioInfo`
and :class:`~rave_data.io.audioinfo.DecodeError`.

The package imports nothing: ``ravedata --help`` and ``duration`` pay only
for the modules they use.
"""
