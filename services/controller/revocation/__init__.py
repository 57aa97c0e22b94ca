"""Revocation of the fleet's own certificates: the scheduled scan that finds revoked ones."""
