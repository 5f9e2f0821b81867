"""The atlas-transfer reference: majority vote of training labels through world coordinates."""
import numpy as np

from rog.evaluate.atlas import majority_label


def test_majority_vote_through_world_coordinates_with_abstention():
    grid = np.eye(4)
    cube = np.zeros((6, 6, 6), np.int16)
    cube[2:4, 2:4, 2:4] = 1
    other = np.where(cube == 1, 2, 0).astype(np.int16)
    # two labels say class 1, one says class 2: the majority wins, voxel by voxel
    vote = majority_label([(cube, grid), (cube, grid), (other, grid)], grid, (6, 6, 6), 3)
    np.testing.assert_array_equal(vote, cube)
    # a label whose grid is shifted by 3 voxels in world space lands 3 voxels away, and where its
    # field of view ends it abstains: the one label that reaches a voxel decides it
    shifted = grid.copy()
    shifted[0, 3] = 3.0
    vote = majority_label([(cube, shifted), (np.zeros_like(cube), grid)], grid, (9, 6, 6), 3)
    assert vote[5, 2, 2] == 0  # a tie (class 1 vs background) goes to the lower class
    alone = majority_label([(cube, shifted)], grid, (9, 6, 6), 3)
    assert alone[5, 2, 2] == 1 and alone[2, 2, 2] == 0
    assert (alone[:3] == 0).all()  # before the shifted grid begins nobody votes: background
