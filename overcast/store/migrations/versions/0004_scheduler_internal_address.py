"""clusters: the scheduler's address inside its VPC, for workers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 16:35:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Workers dial the private address: from the public one their traffic would leave the VPC
    # and no longer match the cluster's "same security group" rule.
    with op.batch_alter_table('clusters') as batch:
        batch.add_column(sa.Column('scheduler_internal_address', sa.String(length=255),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clusters') as batch:
        batch.drop_column('scheduler_internal_address')
