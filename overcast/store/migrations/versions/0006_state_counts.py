"""reconciler: desired cluster/instance state, agent reports, notification repeat counts, control-plane alive mark

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 22:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # What users asked, apart from what the reconciler saw (`state`); stopping clusters of
    # older versions were asked to stop.
    with op.batch_alter_table('clusters') as batch:
        batch.add_column(sa.Column('desired_state', sa.String(length=16), nullable=False,
                                   server_default='running'))
    op.execute("UPDATE clusters SET desired_state = 'stopped' "
               "WHERE state IN ('stopping', 'stopped', 'error')")
    # Instances: removal asked by the user, and what the agent reported (applied by the
    # reconciler, the only writer of `state`).
    with op.batch_alter_table('instances') as batch:
        batch.add_column(sa.Column('desired_state', sa.String(length=16), nullable=False,
                                   server_default='running'))
        batch.add_column(sa.Column('reported_state', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('reported_reason', sa.Text(), nullable=True))
    # A repeated notification is one row with a count.
    with op.batch_alter_table('notifications') as batch:
        batch.add_column(sa.Column('count', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('last_at', sa.DateTime(), nullable=True))
    op.create_table(
        'control_plane_marks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('alive_at', sa.DateTime(), nullable=False),
        sa.Column('gap_ended_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('control_plane_marks')
    with op.batch_alter_table('notifications') as batch:
        batch.drop_column('last_at')
        batch.drop_column('count')
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('reported_reason')
        batch.drop_column('reported_state')
        batch.drop_column('desired_state')
    with op.batch_alter_table('clusters') as batch:
        batch.drop_column('desired_state')
