"""runs.summary: the protocol's summary, stored when a run finishes.

`cryoweave show`, `runs --json` and the GUI read it instead of importing the protocol and
its numerics to compute it again. Runs finished before this revision have none; their
summary is computed when asked, as before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # guarded like the baseline: a database whose tables were created from newer models
    # (tests that build an "old" project with create_all) may have the column already
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
    if "summary" not in columns:
        with op.batch_alter_table('runs', schema=None) as batch_op:
            batch_op.add_column(sa.Column('summary', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('summary')
