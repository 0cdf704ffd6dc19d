"""Test doubles shipped with clumptool (as ``sklearn.utils._testing``): not part of the analysis pipeline.

:mod:`clumptool.testing.fake_panoptes` is a loopback fake of the Zooniverse Panoptes API, used by the tests,
``clumptool fake-panoptes`` and ``make demo`` so an upload can be tried without touching Zooniverse.
"""
