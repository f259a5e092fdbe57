"""software_environments: builder_token, build_started_at (one builder per build attempt)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('software_environments') as batch:
        batch.add_column(sa.Column('builder_token', sa.String(64), nullable=True))
        batch.add_column(sa.Column('build_started_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('software_environments') as batch:
        batch.drop_column('build_started_at')
        batch.drop_column('builder_token')
