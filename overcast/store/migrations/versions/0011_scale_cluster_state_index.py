"""clusters: index on (account_id, state) for the active-clusters list

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 00:10:00
"""
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_clusters_account_state', 'clusters', ['account_id', 'state'])


def downgrade() -> None:
    op.drop_index('ix_clusters_account_state', table_name='clusters')
