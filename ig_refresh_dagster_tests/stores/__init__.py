"""Tests of the stores: accounts, logs, history, selection and budgets on real servers."""
