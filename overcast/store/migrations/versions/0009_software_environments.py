"""software environments: named, versioned package specs, their lock and image;
the Docker Hub repository of a backend

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 23:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('backends') as batch:  # the Docker Hub repository to push to
        batch.add_column(sa.Column('registry_repository', sa.String(length=255), nullable=True))
    op.create_table(
        'software_environments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('lock_text', sa.Text(), nullable=True),
        sa.Column('lock_hash', sa.String(length=64), nullable=True),
        sa.Column('image_uri', sa.String(length=512), nullable=True),
        sa.Column('build_state', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('deleted', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('account_id', 'name', 'version'),
    )
    op.create_index('ix_software_environments_account_id', 'software_environments',
                    ['account_id'])
    op.create_index('ix_software_environments_lock_hash', 'software_environments',
                    ['lock_hash'])


def downgrade() -> None:
    op.drop_index('ix_software_environments_lock_hash', 'software_environments')
    op.drop_index('ix_software_environments_account_id', 'software_environments')
    op.drop_table('software_environments')
    with op.batch_alter_table('backends') as batch:
        batch.drop_column('registry_repository')
