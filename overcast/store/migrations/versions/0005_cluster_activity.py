"""clusters: the scheduler's last activity report, apart from the user's options

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 17:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Heartbeat figures (workers, tasks, clients, idle and no-client seconds) drive the idle
    # and no-client timeouts; they are runtime state, not options the user chose.
    with op.batch_alter_table('clusters') as batch:
        batch.add_column(sa.Column('activity', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clusters') as batch:
        batch.drop_column('activity')
