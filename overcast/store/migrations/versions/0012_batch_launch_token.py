"""instances.launch_token (a batch's ClientToken), clusters.aws_account_id (identity check)

Revision ID: 0012_batch
Revises: 0011
Create Date: 2026-12-01 01:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012_batch'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.add_column(sa.Column('launch_token', sa.String(length=64), nullable=True))
    with op.batch_alter_table('clusters') as batch:
        batch.add_column(sa.Column('aws_account_id', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clusters') as batch:
        batch.drop_column('aws_account_id')
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('launch_token')
