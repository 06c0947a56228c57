"""DICOM adapter: a PACS drop folder -> ImagingStudy events (headers only, no pixel data)."""
