"""Alembic's side of the schema: the environment (env.py) and the revisions (versions/).

Nothing here reads an alembic.ini: :mod:`shared.schema` points Alembic at this folder and hands
it the connection, so the migrations run the same from a checkout or an installed package.
"""
