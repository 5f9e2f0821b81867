"""The report: the paper's figures and tables for whatever runs and attack results it is given."""
