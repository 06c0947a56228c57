"""The consortium registry: member facilities, their tiers, reading centres, EQA and keys."""
