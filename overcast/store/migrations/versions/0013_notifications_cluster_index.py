"""notifications: index on (cluster_id, id) for a cluster's newest notification

Revision ID: 0013
Revises: 0012_batch
Create Date: 2026-12-01 07:40:00
"""
from alembic import op

revision = '0013'
down_revision = '0012_batch'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_notifications_cluster_id', 'notifications', ['cluster_id', 'id'])


def downgrade() -> None:
    op.drop_index('ix_notifications_cluster_id', table_name='notifications')
