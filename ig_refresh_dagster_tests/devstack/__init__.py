"""Tests of the dev stack's own machinery."""
