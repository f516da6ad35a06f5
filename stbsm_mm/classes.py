"""Class order of the diagnosis task, defined once for the whole package.

Index 0 is spinal tuberculosis (STB) and index 1 is spinal metastasis (SM).
A cohort with other label names (the public demo cohort uses ``modic`` and
``no_modic``) passes its own class tuple; see
:func:`stbsm_mm.cohort.resolve_classes`.
"""
DEFAULT_CLASSES = ('STB', 'SM')
