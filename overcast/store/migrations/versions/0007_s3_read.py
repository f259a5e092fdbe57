"""backends: the S3 buckets an account's clusters may read (the instance role's s3_read)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The instance role reads no S3 unless the account names buckets here.
    with op.batch_alter_table('backends') as batch:
        batch.add_column(sa.Column('s3_read', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('backends') as batch:
        batch.drop_column('s3_read')
