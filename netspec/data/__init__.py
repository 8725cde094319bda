"""Caffe's data path: images -> LMDB of Datum (convert), mean files, the DataTransformer, batch reading.

Modules follow Caffe's tools and sources: convert.py (tools/convert_imageset.cpp), mean.py
(tools/compute_image_mean.cpp), transform.py (src/caffe/data_transformer.cpp), reader.py
(src/caffe/layers/data_layer.cpp with its prefetching base), db.py (src/caffe/util/db_lmdb.cpp),
datum.py (src/caffe/util/io.cpp). toy.py writes a small ImageNet-like tree; color_pca.py computes the
paper's colour-augmentation parameters. The Data layer itself is netspec/layers/data_layer.py.
"""
