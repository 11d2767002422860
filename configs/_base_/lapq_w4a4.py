# LAPQ W4A4 on an mmcls classifier: inherit this after the model's config.
_base_ = ['./lapq_w4a4_settings.py']

custom_imports = dict(imports=['mmlapq'], allow_failed_imports=False)
