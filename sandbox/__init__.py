"""CleanCoin's sandbox layer: policy files, enforcement steps, launcher and reports.

Data flows one way: a policy file is parsed and validated into a `Policy` model
(`policy_loader`), compiled against this kernel and the launch variables into a `Plan`
(`plan`), carried out by the enforcement steps (`prepare` before exec, `enforce` after), and
summed up in a `Report` (`report`). This package knows nothing about coins.
"""
