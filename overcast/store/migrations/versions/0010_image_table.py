"""images: overcast VM images (AMIs) built per AWS account and region

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 22:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per build: the reconciler drives it (builder > CreateImage > available).
    op.create_table(
        'images',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=True),
        sa.Column('scope', sa.String(length=80), nullable=False),
        sa.Column('region', sa.String(length=32), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('aws_id', sa.String(length=32), nullable=True),
        sa.Column('name', sa.String(length=128), nullable=True),
        sa.Column('builder_id', sa.String(length=32), nullable=True),
        sa.Column('source_image', sa.String(length=32), nullable=True),
        sa.Column('token_encrypted', sa.Text(), nullable=True),
        sa.Column('reported', sa.String(length=16), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_images_account_id', 'images', ['account_id'])


def downgrade() -> None:
    op.drop_index('ix_images_account_id', table_name='images')
    op.drop_table('images')
