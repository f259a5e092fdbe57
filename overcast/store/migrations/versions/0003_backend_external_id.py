"""backend: external id (role mode) and registry secret

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 18:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The external id a customer's cross-account role must require (generated once per
    # account, shown to its admins); the registry token is a secret: Fernet, like AWS keys.
    with op.batch_alter_table('backends') as batch:
        batch.add_column(sa.Column('external_id', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('role_arn', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('registry_secret_encrypted', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('backends') as batch:
        batch.drop_column('registry_secret_encrypted')
        batch.drop_column('role_arn')
        batch.drop_column('external_id')
