"""Baseline: the schema of version 1, runs.queue included.

A project created before migrations existed is brought here: missing tables are created,
and the queue column (once added by a guarded ALTER on open) is added when absent.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # idempotent: a project made before migrations existed has some or all of these tables
    # (and runs without the queue column, which was added by a guarded ALTER)
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    if 'meta' not in existing:
        op.create_table('meta',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('key')
        )

    if 'runs' not in existing:
        op.create_table('runs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('label', sa.String(length=200), nullable=True),
        sa.Column('protocol', sa.String(length=200), nullable=False),
        sa.Column('schema_version', sa.Integer(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('folder', sa.String(length=500), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('started_at', sa.Float(), nullable=True),
        sa.Column('finished_at', sa.Float(), nullable=True),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('host', sa.String(length=200), nullable=True),
        sa.Column('stop_requested', sa.Boolean(), nullable=False),
        sa.Column('queue', sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('label')
        )

    if 'events' not in existing:
        op.create_table('events',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('time', sa.Float(), nullable=False),
        sa.Column('level', sa.String(length=10), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id')
        )
        with op.batch_alter_table('events', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_events_run_id'), ['run_id'], unique=False)

    if 'sets' not in existing:
        op.create_table('sets',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('state', sa.String(length=8), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('properties', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'name')
        )

    if 'steps' not in existing:
        op.create_table('steps',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('func', sa.String(length=300), nullable=False),
        sa.Column('args', sa.JSON(), nullable=False),
        sa.Column('after', sa.JSON(), nullable=False),
        sa.Column('outputs', sa.JSON(), nullable=False),
        sa.Column('resources', sa.JSON(), nullable=False),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('published', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_seq', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.Float(), nullable=True),
        sa.Column('finished_at', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'key')
        )
        with op.batch_alter_table('steps', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_steps_run_id'), ['run_id'], unique=False)

    if 'stream_cursors' not in existing:
        op.create_table('stream_cursors',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('input_name', sa.String(length=100), nullable=False),
        sa.Column('set_id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('next_item_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'input_name')
        )

    if 'stream_units' not in existing:
        op.create_table('stream_units',
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('stream', sa.String(length=100), nullable=False),
        sa.Column('unit_key', sa.String(length=1000), nullable=False),
        sa.Column('step_key', sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'stream', 'unit_key')
        )

    if 'micrographs' not in existing:
        op.create_table('micrographs',
        sa.Column('path', sa.String(length=1000), nullable=False),
        sa.Column('name', sa.String(length=1000), nullable=True),
        sa.Column('width_px', sa.Integer(), nullable=True),
        sa.Column('height_px', sa.Integer(), nullable=True),
        sa.Column('pixel_size_a', sa.Float(), nullable=True),
        sa.Column('optics_group', sa.Integer(), nullable=True),
        sa.Column('defocus_u_a', sa.Float(), nullable=True),
        sa.Column('defocus_v_a', sa.Float(), nullable=True),
        sa.Column('defocus_angle_deg', sa.Float(), nullable=True),
        sa.Column('phase_shift_deg', sa.Float(), nullable=True),
        sa.Column('set_id', sa.Integer(), nullable=False),
        sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('extra', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['set_id'], ['sets.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('set_id', 'item_id')
        )
        with op.batch_alter_table('micrographs', schema=None) as batch_op:
            batch_op.create_index('ix_micrographs_set_seq', ['set_id', 'seq'], unique=False)

    if 'optics_groups' not in existing:
        op.create_table('optics_groups',
        sa.Column('set_id', sa.Integer(), nullable=False),
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=True),
        sa.Column('pixel_size_a', sa.Float(), nullable=True),
        sa.Column('box_px', sa.Integer(), nullable=True),
        sa.Column('voltage_kv', sa.Float(), nullable=True),
        sa.Column('cs_mm', sa.Float(), nullable=True),
        sa.Column('amplitude_contrast', sa.Float(), nullable=True),
        sa.Column('extra', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['set_id'], ['sets.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('set_id', 'group_id')
        )

    if 'particles' not in existing:
        op.create_table('particles',
        sa.Column('image_path', sa.String(length=1000), nullable=True),
        sa.Column('image_index', sa.Integer(), nullable=True),
        sa.Column('micrograph_id', sa.Integer(), nullable=True),
        sa.Column('micrograph_name', sa.String(length=1000), nullable=True),
        sa.Column('coord_x_px', sa.Float(), nullable=True),
        sa.Column('coord_y_px', sa.Float(), nullable=True),
        sa.Column('defocus_u_a', sa.Float(), nullable=True),
        sa.Column('defocus_v_a', sa.Float(), nullable=True),
        sa.Column('defocus_angle_deg', sa.Float(), nullable=True),
        sa.Column('phase_shift_deg', sa.Float(), nullable=True),
        sa.Column('ctf_bfactor', sa.Float(), nullable=True),
        sa.Column('ctf_scale', sa.Float(), nullable=True),
        sa.Column('rot_deg', sa.Float(), nullable=True),
        sa.Column('tilt_deg', sa.Float(), nullable=True),
        sa.Column('psi_deg', sa.Float(), nullable=True),
        sa.Column('shift_x_a', sa.Float(), nullable=True),
        sa.Column('shift_y_a', sa.Float(), nullable=True),
        sa.Column('optics_group', sa.Integer(), nullable=True),
        sa.Column('half', sa.Integer(), nullable=True),
        sa.Column('weight', sa.Float(), nullable=True),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('set_id', sa.Integer(), nullable=False),
        sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('extra', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['set_id'], ['sets.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('set_id', 'item_id')
        )
        with op.batch_alter_table('particles', schema=None) as batch_op:
            batch_op.create_index('ix_particles_set_seq', ['set_id', 'seq'], unique=False)

    if 'records' not in existing:
        op.create_table('records',
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('set_id', sa.Integer(), nullable=False),
        sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('extra', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['set_id'], ['sets.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('set_id', 'item_id')
        )
        with op.batch_alter_table('records', schema=None) as batch_op:
            batch_op.create_index('ix_records_set_seq', ['set_id', 'seq'], unique=False)

    if 'volumes' not in existing:
        op.create_table('volumes',
        sa.Column('path', sa.String(length=1000), nullable=False),
        sa.Column('half1_path', sa.String(length=1000), nullable=True),
        sa.Column('half2_path', sa.String(length=1000), nullable=True),
        sa.Column('pixel_size_a', sa.Float(), nullable=True),
        sa.Column('box_px', sa.Integer(), nullable=True),
        sa.Column('set_id', sa.Integer(), nullable=False),
        sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('extra', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['set_id'], ['sets.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('set_id', 'item_id')
        )
        with op.batch_alter_table('volumes', schema=None) as batch_op:
            batch_op.create_index('ix_volumes_set_seq', ['set_id', 'seq'], unique=False)

    if "runs" in existing:
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
        if "queue" not in columns:
            op.add_column("runs", sa.Column("queue", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_index('ix_volumes_set_seq')

    op.drop_table('volumes')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_set_seq')

    op.drop_table('records')
    with op.batch_alter_table('particles', schema=None) as batch_op:
        batch_op.drop_index('ix_particles_set_seq')

    op.drop_table('particles')
    op.drop_table('optics_groups')
    with op.batch_alter_table('micrographs', schema=None) as batch_op:
        batch_op.drop_index('ix_micrographs_set_seq')

    op.drop_table('micrographs')
    op.drop_table('stream_units')
    op.drop_table('stream_cursors')
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_steps_run_id'))

    op.drop_table('steps')
    op.drop_table('sets')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_run_id'))

    op.drop_table('events')
    op.drop_table('runs')
    op.drop_table('meta')
